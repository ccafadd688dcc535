"""The verbs beside `train`: evaluate data end to end (`evaluation`), measure the estimators (`calibrate`), and
summarise a run without training (`dryrun`)."""
