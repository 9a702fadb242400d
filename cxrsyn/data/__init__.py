"""Dataset folders, image reading, sources, transforms, the sampler and the LightningDataModule."""
