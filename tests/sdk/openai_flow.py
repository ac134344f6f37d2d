"""The OpenAI fine-tuning flow against a running Wick, through the unmodified `openai` SDK.

Run by tests/openai_sdk.rs, which starts the server and passes WICK_URL and WICK_KEY. Each step
prints one line; any mismatch raises, and the Rust test fails with this script's output.
"""

import json
import os
import sys
import tempfile
import time

import openai
from openai import OpenAI

URL, KEY = os.environ["WICK_URL"], os.environ["WICK_KEY"]
client = OpenAI(base_url=f"{URL}/v1", api_key=KEY, max_retries=0, timeout=60)
print("openai", openai.__version__)


def jsonl(rows):
    f = tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False)
    for r in rows:
        f.write(json.dumps(r) + "\n")
    f.close()
    return f.name


def sums(n, offset):
    out = []
    for i in range(n):
        a, b = (i * 7 + offset) % 10, (i * 3 + offset * 5) % 10
        out.append((f"What is {a} plus {b}?", f"Answer: {a + b}"))
    return out


def wait(job_id, until=("succeeded",), timeout=300):
    deadline = time.time() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in until:
            return job
        if job.status in ("failed", "cancelled"):
            raise SystemExit(f"job {job_id} ended {job.status}: {job.error}")
        if time.time() > deadline:
            raise SystemExit(f"job {job_id} still {job.status} after {timeout}s")
        time.sleep(0.3)


# 1. Files: a pretraining corpus (our purpose) and chat files (OpenAI's purpose).
with open(jsonl([{"text": f"{q} {a}."} for q, a in sums(300, 1)]), "rb") as fh:
    corpus = client.files.create(file=fh, purpose="pretrain")
with open(jsonl([{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                 for q, a in sums(160, 2)]), "rb") as fh:
    train = client.files.create(file=fh, purpose="fine-tune")
with open(jsonl([{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                 for q, a in sums(32, 9)]), "rb") as fh:
    valid = client.files.create(file=fh, purpose="fine-tune")
assert train.object == "file" and train.purpose == "fine-tune" and train.bytes > 0, train
assert client.files.retrieve(train.id).id == train.id
assert train.id in [f.id for f in client.files.list()]
print("files ok", corpus.id, train.id, valid.id)

# 2. Bad input surfaces as the SDK's typed errors, with our code and param.
try:
    client.fine_tuning.jobs.create(model="no-such-model", training_file=train.id)
    raise SystemExit("an unknown model was accepted")
except openai.BadRequestError as e:
    assert e.status_code == 400 and e.param == "model", (e.status_code, e.param, e.body)
    print("bad request ok:", e.code, e.param)
try:
    client.fine_tuning.jobs.retrieve("ftjob-missing")
    raise SystemExit("a missing job was found")
except openai.NotFoundError:
    print("not found ok")

# 3. A base model to fine-tune: Wick pretrains one (our `pretrain` method, through `method`).
base_job = client.fine_tuning.jobs.create(
    model="wick-llama-1m", training_file=corpus.id, suffix="base", seed=1,
    method={"type": "pretrain", "pretrain": {"hyperparameters": {
        "vocab_size": 320, "max_seq_len": 64, "batch_size": 8, "max_steps": 50,
        "learning_rate": 3e-3, "warmup_steps": 5}}})
base = wait(base_job.id).fine_tuned_model
assert base and base.startswith("ft:wick-llama-1m:base:"), base
print("pretrained", base)

# 4. OpenAI's supervised method with its three hyperparameters, "auto" included, beside ours.
job = client.fine_tuning.jobs.create(
    model=base, training_file=train.id, validation_file=valid.id, suffix="sdk", seed=7,
    method={"type": "supervised", "supervised": {"hyperparameters": {
        "n_epochs": 2, "batch_size": "auto", "learning_rate_multiplier": "auto",
        "learning_rate": 3e-3, "max_seq_len": 64, "eval_every": 5, "checkpoint_every": 10,
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0}}}})
assert job.object == "fine_tuning.job" and job.status in ("validating_files", "queued", "running"), job
assert job.method.type == "supervised", job.method
done = wait(job.id)
assert done.fine_tuned_model == f"ft:wick-llama-1m:sdk:{job.id}", done.fine_tuned_model
assert done.trained_tokens and done.trained_tokens > 0, done
assert done.result_files, done
print("supervised job", done.status, done.fine_tuned_model, "trained_tokens", done.trained_tokens)

events = client.fine_tuning.jobs.list_events(job.id, limit=100).data
assert events and all(e.object == "fine_tuning.job.event" for e in events), events
messages = [e.message for e in events]
assert any("successfully completed" in m for m in messages), messages
assert any("Checkpoint saved" in m for m in messages), messages
print("events ok", len(events))

ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
assert ckpts, "checkpoints were listed"
for c in ckpts:
    assert c.object == "fine_tuning.job.checkpoint" and c.fine_tuning_job_id == job.id, c
    assert c.step_number > 0 and c.metrics is not None, c
print("checkpoints ok", [c.step_number for c in ckpts])

assert job.id in [j.id for j in client.fine_tuning.jobs.list(limit=10).data]
model_ids = [m.id for m in client.models.list().data]
assert done.fine_tuned_model in model_ids and "wick-llama-1m" in model_ids, model_ids
print("list ok")

# 5. The result answers through the chat API, plain and streamed.
reply = client.chat.completions.create(
    model=done.fine_tuned_model, messages=[{"role": "user", "content": "What is 2 plus 3?"}],
    max_tokens=8, temperature=0)
assert reply.object == "chat.completion" and reply.choices[0].message.role == "assistant", reply
text = reply.choices[0].message.content
pieces = [chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
    model=done.fine_tuned_model, messages=[{"role": "user", "content": "What is 2 plus 3?"}],
    max_tokens=8, temperature=0, stream=True) if chunk.choices]
assert "".join(pieces) == text, (pieces, text)
print("chat ok", repr(text))

# A checkpoint answers as a model of its own (OpenAI's checkpoint model names), and the base
# continues raw text through the legacy completions API, plain and streamed.
ckpt_model = ckpts[0].fine_tuned_model_checkpoint
assert ckpt_model.startswith(done.fine_tuned_model + ":ckpt-step-"), ckpt_model
ckpt_reply = client.chat.completions.create(
    model=ckpt_model, messages=[{"role": "user", "content": "What is 2 plus 3?"}],
    max_tokens=8, temperature=0)
assert ckpt_reply.model == ckpt_model and ckpt_reply.choices[0].message.role == "assistant", ckpt_reply
completion = client.completions.create(model=base, prompt="What is 2 plus", max_tokens=6, temperature=0)
assert completion.object == "text_completion" and completion.choices[0].finish_reason in ("stop", "length"), completion
assert completion.usage.completion_tokens <= 6, completion.usage
streamed = "".join(c.choices[0].text for c in client.completions.create(
    model=base, prompt="What is 2 plus", max_tokens=6, temperature=0, stream=True) if c.choices)
assert streamed == completion.choices[0].text, (streamed, completion.choices[0].text)
print("checkpoint chat and completions ok", repr(completion.choices[0].text))

# 6. Preference tuning with OpenAI's `dpo` method on the fine-tuned model: the right answer is
#    preferred over a near miss. Wick's own knobs (loss_type, lora) sit beside OpenAI's.
prefs = []
for q, a in sums(40, 4):
    n = int(a.split()[-1])
    prefs.append({"input": {"messages": [{"role": "user", "content": q}]},
                  "preferred_output": [{"role": "assistant", "content": a}],
                  "non_preferred_output": [{"role": "assistant", "content": f"Answer: {n + 1}"}]})
with open(jsonl(prefs), "rb") as fh:
    pref_file = client.files.create(file=fh, purpose="fine-tune")
dpo = client.fine_tuning.jobs.create(
    model=done.fine_tuned_model, training_file=pref_file.id, suffix="dpo", seed=3,
    method={"type": "dpo", "dpo": {"hyperparameters": {
        "beta": 0.1, "n_epochs": 1, "batch_size": 8, "learning_rate_multiplier": "auto",
        "learning_rate": 1e-3, "max_seq_len": 64, "loss_type": "sigmoid",
        "lora": {"r": 4, "alpha": 8, "dropout": 0.0}}}})
assert dpo.method.type == "dpo" and dpo.method.dpo.hyperparameters.beta == 0.1, dpo.method
dpo_done = wait(dpo.id)
assert dpo_done.fine_tuned_model == f"ft:wick-llama-1m:dpo:{dpo.id}", dpo_done.fine_tuned_model
dpo_events = [e.message for e in client.fine_tuning.jobs.list_events(dpo.id, limit=100).data]
assert any(m.startswith("Reference log-probs ready") for m in dpo_events), dpo_events
print("dpo job", dpo_done.status, dpo_done.fine_tuned_model)

# 7. Cancel a running job.
slow = client.fine_tuning.jobs.create(
    model=base, training_file=train.id, suffix="cancel",
    method={"type": "supervised", "supervised": {"hyperparameters": {
        "max_steps": 100000, "max_seq_len": 64, "lora": {"r": 4}}}})
wait(slow.id, until=("running",))
cancelled = client.fine_tuning.jobs.cancel(slow.id)
assert cancelled.status in ("cancelled", "running"), cancelled.status
deadline = time.time() + 30
while client.fine_tuning.jobs.retrieve(slow.id).status != "cancelled":
    assert time.time() < deadline, "cancel took effect"
    time.sleep(0.2)
print("cancel ok")
print("OPENAI SDK FLOW PASSED")
sys.exit(0)
