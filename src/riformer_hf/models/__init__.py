"""The model families: RIFormer (the student) and GFNet-H (its logit teacher). Each folder is self-contained apart from
transformers and torch, so its configuration and modelling files travel to the Hub for `trust_remote_code`."""
