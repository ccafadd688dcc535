"""What a run is, torch-free: the typed config and its YAML (`schema`, with each field's bound declared beside it
through `dpg.fields`), value and path checks (`validation`), and the names shared with the implementations (`names`)."""
