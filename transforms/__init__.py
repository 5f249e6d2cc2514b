"""Pure, batched, device-agnostic tensor functions of the UGainS method."""
