"""Writers of the real datasets' layouts, filled with phantom radiographs: for tests, benchmarks and demos. One
module per dataset (``rsna``, ``kermany``, ``nih``, ``chexpert``, ``padchest``), each writing the files as the
dataset's owner ships them, quirks included; ``common`` holds the pixels and file writers they share. Nothing
here is real patient data."""
