"""`distill serve`: a batched OpenAI-compatible server over local HF models (`server`), its request parsing
(`chat_request`), batching (`batcher`), model engine (`local_engine`), embedded models (`local_models`) and the
subprocess launcher `distill run` uses (`launch`)."""
