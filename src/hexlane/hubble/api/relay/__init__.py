"""Generated from relay/relay.proto (`make proto`)."""
