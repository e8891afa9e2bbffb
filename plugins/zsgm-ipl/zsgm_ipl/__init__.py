"""IPL (Guo et al., CVPR 2023): zero-shot generative model adaptation via image-specific prompt learning."""
