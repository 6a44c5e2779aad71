"""The teacher stage: ECR prompt templates, `distill generate`, trace parsing and `distill merge`."""
