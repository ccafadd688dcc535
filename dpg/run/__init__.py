"""A run on disk and on screen: atomic writes and filesystem faults (`fsio`), checkpoint manifests and resume
(`checkpoints`), the NaN/inf guard (`finite`), the console (`console`) and the curves (`plotting`)."""
