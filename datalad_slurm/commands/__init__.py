"""The DataLad commands: parameters, validation, result rendering; no business logic."""
