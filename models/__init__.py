"""Model adapters: Mask2Former (RbA scores), Segment Anything, and one UGainS step."""
