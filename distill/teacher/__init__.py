"""The teacher stage: prompts, the OpenAI-wire client, the request journal, trace parsing and `distill generate`."""
