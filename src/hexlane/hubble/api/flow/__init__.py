"""Generated from flow/flow.proto (`make proto`)."""
