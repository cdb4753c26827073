"""The three HyBNN phases: pretrain the encoder, extract packed codes, train the BNN head."""
