"""Generated from observer/observer.proto (`make proto`)."""
