"""The OpenAI-wire client shared by `generate`, `reason` (openai backend) and the `llm_judge` scorer: `http`
(TeacherClient, retries, AIMD limiter), `journal` (content-keyed append-only answers), `driver` (send what the journal
lacks, with a progress bar; `complete_many` for synchronous callers). Imports nothing from the stages that use it."""
