"""Generated Python of protos/identity/v1/*.proto: regenerate with `make proto`, never edit."""
