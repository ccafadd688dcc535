"""What a run is, torch-free: the typed config and its YAML (`schema`), each field's type and declared bound (`fields`),
value and path checks (`validation`), and the names shared with the implementations (`names`)."""
