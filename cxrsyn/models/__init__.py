"""The classifier: a timm backbone with one pneumonia logit, inside a LightningModule."""
