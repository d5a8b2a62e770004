//! The audit trail of signed requests: JSON Lines or runnable curl commands, secrets redacted.
