"""The verbs beside `train`: evaluate data end to end (`evaluation`), measure the estimators (`calibrate`), check the
engine by finite differences (`check`), score a dataset's examples (`attribution`) and keep the best (`select`), and
summarise a run without training (`dryrun`)."""
