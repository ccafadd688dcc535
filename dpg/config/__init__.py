"""What a run is, torch-free: the typed config and its YAML (`schema`), value and path checks (`validation`), and the
names shared with the implementations (`names`)."""
