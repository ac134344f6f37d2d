//! Scheduler and worker tests with real processes: jobs train a tiny model through the HTTP API,
//! survive a worker killed mid-training, run exactly once across two workers, fail cleanly when
//! their training process aborts, honour cancel and pause, and stream over SSE without gaps.

mod common;
#[path = "common/corpus.rs"]
mod corpus;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Backend, TestApp, spawn_app_with};
use serde_json::{Value, json};

fn pretrain_job(file: &str, steps: u32, checkpoint_every: u32) -> Value {
    json!({"model": "wick-llama-1m", "training_file": file, "seed": 11, "suffix": "tiny",
           "method": {"type": "pretrain", "pretrain": {"hyperparameters": {
               "vocab_size": 320, "max_seq_len": 32, "batch_size": 4, "max_steps": steps,
               "learning_rate": 3e-3, "warmup_steps": 2, "eval_every": 5,
               "checkpoint_every": checkpoint_every, "n_checkpoints": 2, "validation_split": 0.1}}}})
}

/// A job whose steps each take several micro-batches (gradient accumulation 4), so that a pause or
/// a signal sent once the first step is reported lands mid-run even on a fast trainer, while the
/// run still finishes within the tests' deadlines after it resumes.
fn interruptible_job(file: &str, steps: u32) -> Value {
    let mut job = pretrain_job(file, steps, 1000);
    job["method"]["pretrain"]["hyperparameters"]["gradient_accumulation_steps"] = json!(4);
    job
}

async fn upload_corpus(app: &TestApp) -> String {
    app.upload_file("pretrain", "docs.jsonl", corpus::corpus_jsonl(300))
        .await
}

async fn create_job(app: &TestApp, body: &Value) -> String {
    let (s, j) = app.post(&app.admin_key, "/v1/fine_tuning/jobs", body).await;
    assert_eq!(s, 200, "{j}");
    j["id"].as_str().unwrap().to_string()
}

fn assert_each_step_once(points: &[(u64, f64)], steps: u64) {
    let got: Vec<u64> = points.iter().map(|p| p.0).collect();
    assert_eq!(
        got,
        (1..=steps).collect::<Vec<_>>(),
        "every step exactly once, in order"
    );
}

/// A `wick worker` process against the app's store and blob folder.
fn start_worker(app: &TestApp, lease_secs: u64) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wick"));
    cmd.arg("worker")
        .arg("--data-dir")
        .arg(&app.data_dir)
        .args(["--worker-slots", "1", "--threads-per-job", "1"])
        .args(["--lease-secs", &lease_secs.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    if let Some(url) = &app.database_url {
        cmd.arg("--database-url").arg(url);
    }
    cmd.spawn().expect("start wick worker")
}

async fn pretraining_job_succeeds_with_metrics_checkpoints_and_a_model(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.worker_slots = 1).await;
    let file = upload_corpus(&app).await;
    let id = create_job(&app, &pretrain_job(&file, 12, 5)).await;
    let job = app.wait_status(&id, "succeeded", 120).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(
        job["fine_tuned_model"],
        format!("ft:wick-llama-1m:tiny:{id}")
    );
    assert!(job["trained_tokens"].as_u64().unwrap() > 0);
    assert!(job["finished_at"].is_i64());

    let points = app.train_points(&id).await;
    assert_each_step_once(&points, 12);
    assert!(
        points.last().unwrap().1 < points[0].1,
        "loss fell: {points:?}"
    );
    let (_, m) = app
        .get(
            &app.admin_key,
            &format!("/v1/fine_tuning/jobs/{id}/metrics"),
        )
        .await;
    let evals: Vec<&Value> = m["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.get("valid_loss").is_some())
        .collect();
    assert!(!evals.is_empty());
    for e in &evals {
        let (l, p) = (
            e["valid_loss"].as_f64().unwrap(),
            e["valid_perplexity"].as_f64().unwrap(),
        );
        assert!((l.exp() - p).abs() < 1e-6 * p, "perplexity = exp(loss)");
    }
    let csv = app
        .get_text(
            &app.admin_key,
            &format!("/v1/fine_tuning/jobs/{id}/metrics"),
            Some("text/csv"),
        )
        .await;
    assert!(csv.starts_with("step,epoch,train_loss"));
    assert_eq!(csv.lines().count(), 13);
    // Each evaluation's sample answers, apart from the metrics.
    let (_, samples) = app
        .get(
            &app.admin_key,
            &format!("/v1/fine_tuning/jobs/{id}/samples"),
        )
        .await;
    let sets = samples["data"].as_array().unwrap();
    let eval_steps: Vec<&Value> = evals.iter().map(|e| &e["step"]).collect();
    let sample_steps: Vec<&Value> = sets.iter().map(|s| &s["step"]).collect();
    assert_eq!(sample_steps, eval_steps);
    assert!(
        !sets[0]["samples"].as_array().unwrap().is_empty(),
        "{samples}"
    );
    assert!(
        m["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p.get("samples").is_none()),
        "samples are not metric points"
    );

    // Checkpoints at steps 10 and 5 (newest first), each with its metrics.
    let (_, ck) = app
        .get(
            &app.admin_key,
            &format!("/v1/fine_tuning/jobs/{id}/checkpoints"),
        )
        .await;
    let steps: Vec<u64> = ck["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step_number"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [10, 5]);
    assert!(ck["data"][0]["metrics"]["train_loss"].is_f64());

    // The results file, as OpenAI lists it.
    let result = job["result_files"][0].as_str().unwrap();
    let r = app
        .client
        .get(app.url(&format!("/v1/files/{result}/content")))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), csv);

    // The model in the blob store loads and generates.
    let model_dir = app.data_dir.join("blobs").join("models").join(&id);
    let tokens = wick::model::generate::generate_greedy(&model_dir, "The cat", 5).unwrap();
    assert_eq!(tokens.len(), 5);

    let messages = app.event_messages(&id).await;
    assert!(
        messages.iter().any(|m| m.starts_with("Job started")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("Checkpoint saved at step 5")),
        "{messages:?}"
    );
    assert_eq!(messages[0], "The job has successfully completed");
}

async fn cancel_stops_within_a_step_and_pause_resumes(backend: Backend) {
    // The SQLite and Postgres variants run at once: one compute thread per job, so two trainings
    // do not oversubscribe two cores and starve the workers that read their steps (a starved
    // worker falls behind by a pipe's worth of already-computed steps).
    let app = spawn_app_with(backend, |s| {
        s.worker_slots = 1;
        s.threads_per_job = 1;
    })
    .await;
    let file = upload_corpus(&app).await;

    let long = create_job(&app, &interruptible_job(&file, 5000)).await;
    app.wait_for_first_step(&long).await;
    let (s, j) = app
        .post(
            &app.admin_key,
            &format!("/v1/fine_tuning/jobs/{long}/cancel"),
            &json!({}),
        )
        .await;
    assert_eq!((s, j["status"].as_str()), (200, Some("cancelled")));
    let at_cancel = app.train_points(&long).await.len();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = app.train_points(&long).await.len();
    // Points already computed but not yet flushed (at most 64), plus the few steps that run
    // before the worker's 200 ms status check reaches the child.
    assert!(
        after <= at_cancel + 74,
        "kept training after cancel: {at_cancel} -> {after}"
    );
    let after_more = {
        tokio::time::sleep(Duration::from_secs(1)).await;
        app.train_points(&long).await.len()
    };
    assert_eq!(after, after_more, "no step after the cancel was seen");
    assert_eq!(app.job(&long).await["status"], "cancelled");

    // Pause mid-run, three times: each pause writes a checkpoint; each resume goes on from it,
    // each step once; a pause is not a failure, so no attempt is counted for it.
    let id = create_job(&app, &interruptible_job(&file, 400)).await;
    let mut last_checkpoint = 0;
    for round in 1..=3 {
        // Training again (a new step stored) before each pause.
        let seen = app.train_points(&id).await.len();
        let deadline = Instant::now() + Duration::from_secs(60);
        while app.train_points(&id).await.len() <= seen {
            assert!(
                Instant::now() < deadline,
                "no new step before pause {round}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (s, _) = app
            .post(
                &app.admin_key,
                &format!("/v1/fine_tuning/jobs/{id}/pause"),
                &json!({}),
            )
            .await;
        assert_eq!(s, 200);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let (_, ck) = app
                .get(
                    &app.admin_key,
                    &format!("/v1/fine_tuning/jobs/{id}/checkpoints"),
                )
                .await;
            let job = app.job(&id).await;
            // Checkpoints are listed newest first (and pruned to n_checkpoints).
            let newest = ck["data"][0]["step_number"].as_u64().unwrap_or(0);
            if newest > last_checkpoint && job["status"] == "paused" {
                last_checkpoint = newest;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pause {round} wrote no checkpoint"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // The worker lets go of the job once its process has stopped.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (s, j) = app
            .post(
                &app.admin_key,
                &format!("/v1/fine_tuning/jobs/{id}/resume"),
                &json!({}),
            )
            .await;
        assert_eq!((s, j["status"].as_str()), (200, Some("queued")));
    }
    let done = app.wait_status(&id, "succeeded", 180).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_each_step_once(&app.train_points(&id).await, 400);
    let attempts: Vec<String> = app
        .event_messages(&id)
        .await
        .into_iter()
        .filter(|m| m.contains("attempt"))
        .collect();
    assert!(
        attempts.is_empty(),
        "pauses counted as attempts: {attempts:?}"
    );
}

async fn sse_reconnect_with_last_event_id_sees_every_point_once(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.worker_slots = 1).await;
    let file = upload_corpus(&app).await;
    let id = create_job(&app, &pretrain_job(&file, 60, 20)).await;
    // First connection: leave after ten metric points.
    let first = app
        .read_sse(&id, None, |m| {
            m.iter().filter(|x| x.1 == "metrics").count() >= 10
        })
        .await;
    let last_id = first.last().unwrap().0.clone();
    // Reconnect from there and read to the end of the job.
    let second = app
        .read_sse(&id, Some(&last_id), |m| {
            m.last().is_some_and(|x| x.1 == "done")
        })
        .await;
    assert_eq!(second.last().unwrap().1, "done");
    assert_eq!(second.last().unwrap().2["status"], "succeeded");
    let steps: Vec<u64> = first
        .iter()
        .chain(second.iter())
        .filter(|x| x.1 == "metrics" && x.2["kind"] == "train")
        .map(|x| x.2["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        steps,
        (1..=60).collect::<Vec<_>>(),
        "every train point once, in order"
    );
    let statuses: Vec<&str> = first
        .iter()
        .chain(second.iter())
        .filter(|x| x.1 == "status")
        .map(|x| x.2["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&"succeeded"), "{statuses:?}");
    // A watcher arriving after the end gets the whole history and a clean end.
    let late = app
        .read_sse(&id, None, |m| m.last().is_some_and(|x| x.1 == "done"))
        .await;
    assert_eq!(
        late.iter()
            .filter(|x| x.1 == "metrics" && x.2["kind"] == "train")
            .count(),
        60
    );
}

async fn a_job_too_big_for_this_machine_is_refused_before_it_starts(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.worker_slots = 1).await;
    let file = upload_corpus(&app).await;
    let id = create_job(&app, &json!({"model": "wick-llama-125m", "training_file": file,
        "method": {"type": "pretrain", "pretrain": {"hyperparameters": {"batch_size": 1024, "max_seq_len": 2048}}}})).await;
    let j = app
        .wait_until(&id, 60, "failure", |j| j["status"] == "failed")
        .await;
    assert_eq!(j["error"]["code"], "insufficient_memory", "{j}");
    assert!(
        j["error"]["message"].as_str().unwrap().contains("GiB"),
        "{j}"
    );
    assert!(app.train_points(&id).await.is_empty());
}

/// A job whose worker goes silent on every allowed attempt fails with `worker_lost` (the leases
/// here are taken already expired, as a worker dead right after claiming leaves them).
async fn a_job_whose_worker_is_lost_on_every_attempt_fails_with_worker_lost(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.worker_slots = 0).await;
    let file = upload_corpus(&app).await;
    let id = create_job(&app, &pretrain_job(&file, 5, 100)).await;
    app.wait_status(&id, "queued", 30).await;
    let expired = chrono::Duration::seconds(-1);
    let mut attempts = vec![];
    while let Some(job) = wick::store::queue::claim_next_job(
        &app.state.db,
        "lost",
        expired,
        wick::devices::DeviceKind::Cpu,
    )
    .await
    .unwrap()
    {
        assert_eq!(job.id, id);
        attempts.push(job.attempts);
        assert!(attempts.len() <= 10, "claimed forever: {attempts:?}");
    }
    assert_eq!(attempts, [1, 2, 3], "each allowed attempt, then no more");
    let job = app.job(&id).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert_eq!(job["error"]["code"], "worker_lost", "{job}");
    let messages = app.event_messages(&id).await;
    assert!(
        messages
            .iter()
            .any(|m| m == "Job failed: its worker stopped answering on the last allowed attempt"),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("(attempt 3 of 3)")),
        "{messages:?}"
    );
}

/// Pause and resume fired at random moments of a job's life (its process starting, mid-step,
/// checkpointing, publishing its result), with two slots free to claim it: the job ends
/// `succeeded` once, with every step recorded once and one model.
async fn pause_and_resume_at_random_moments_run_each_job_once(backend: Backend) {
    use rand::{Rng, SeedableRng};
    let app = spawn_app_with(backend, |s| s.worker_slots = 2).await;
    let file = upload_corpus(&app).await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(16);
    for trial in 0..3 {
        let steps = 24;
        let id = create_job(&app, &pretrain_job(&file, steps, 4)).await;
        let path = |action: &str| format!("/v1/fine_tuning/jobs/{id}/{action}");
        let mut actions = vec![];
        loop {
            let j = app.job(&id).await;
            if ["succeeded", "failed", "cancelled"].contains(&j["status"].as_str().unwrap()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..400))).await;
            let (s, _) = app.post(&app.admin_key, &path("pause"), &json!({})).await;
            // Resume at once half the time (before the worker can act), else a little later.
            let gap = if rng.random_bool(0.5) {
                0
            } else {
                rng.random_range(0..300)
            };
            tokio::time::sleep(Duration::from_millis(gap)).await;
            let (r, _) = app.post(&app.admin_key, &path("resume"), &json!({})).await;
            actions.push((s, gap, r));
            assert!(
                actions.len() < 60,
                "trial {trial}: the job never ended: {actions:?}"
            );
        }
        let done = app.wait_status(&id, "succeeded", 120).await;
        if done["status"] != "succeeded" {
            let mut messages = app.event_messages(&id).await;
            messages.reverse();
            panic!(
                "trial {trial}: {}\n{actions:?}\n{messages:#?}",
                done["error"]
            );
        }
        assert_each_step_once(&app.train_points(&id).await, steps as u64);
        let messages = app.event_messages(&id).await;
        let created = messages
            .iter()
            .filter(|m| m.starts_with("New fine-tuned model created"))
            .count();
        assert_eq!(created, 1, "trial {trial}: {actions:?}\n{messages:#?}");
        assert_eq!(
            messages
                .iter()
                .filter(|m| m.starts_with("The job has successfully completed"))
                .count(),
            1
        );
    }
}

/// When the blob store fails to take a checkpoint mid-run (here: a file stands where the step-10
/// checkpoint's folder must go), the job is paused with a clear event, keeps its step-5
/// checkpoint, and, resumed once the store works, finishes with every step once.
async fn a_store_failure_during_training_pauses_the_job_and_keeps_its_checkpoint(backend: Backend) {
    let app = spawn_app_with(backend, |s| s.worker_slots = 1).await;
    let file = upload_corpus(&app).await;
    let steps = 20;
    let mut body = pretrain_job(&file, steps, 5);
    body["method"]["pretrain"]["hyperparameters"]["n_checkpoints"] = json!(4);
    let (s, job) = app
        .post(&app.admin_key, "/v1/fine_tuning/jobs", &body)
        .await;
    assert_eq!(s, 200, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let blocker = app
        .data_dir
        .join(format!("blobs/jobs/{id}/checkpoints/checkpoint-00000010"));
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"in the way").unwrap();
    let paused = app.wait_status(&id, "paused", 120).await;
    assert_eq!(paused["status"], "paused", "{paused}");
    let events = app.events(&id).await;
    let event = events
        .iter()
        .find(|e| {
            e["message"]
                .as_str()
                .unwrap()
                .starts_with("Job paused: the blob store failed")
        })
        .unwrap_or_else(|| panic!("{events:?}"))
        .clone();
    assert_eq!(event["level"], "error");
    assert_eq!(event["data"]["code"], "storage_unavailable");
    let message = event["message"].as_str().unwrap();
    assert!(
        message.contains("checkpoint of step 10") && message.contains("(step 5)"),
        "{message}"
    );
    assert_eq!(app.checkpoint_steps(&id).await, [5]);
    // The store works again; the job resumes from step 5 and finishes.
    std::fs::remove_file(&blocker).unwrap();
    let (s, _) = app
        .post(
            &app.admin_key,
            &format!("/v1/fine_tuning/jobs/{id}/resume"),
            &json!({}),
        )
        .await;
    assert_eq!(s, 200);
    let done = app.wait_status(&id, "succeeded", 120).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_each_step_once(&app.train_points(&id).await, steps as u64);
}

on_both_stores!(
    a_store_failure_during_training_pauses_the_job_and_keeps_its_checkpoint,
    pause_and_resume_at_random_moments_run_each_job_once,
    a_job_whose_worker_is_lost_on_every_attempt_fails_with_worker_lost,
    a_job_too_big_for_this_machine_is_refused_before_it_starts,
    pretraining_job_succeeds_with_metrics_checkpoints_and_a_model,
    cancel_stops_within_a_step_and_pause_resumes,
    sse_reconnect_with_last_event_id_sees_every_point_once,
);

/// Postgres only: several processes share one store, as `wick worker`s do when scaled out.
mod multi_process {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn killed_worker_is_resumed_elsewhere_with_every_step_once_and_the_same_loss() {
        let app = spawn_app_with(Backend::Postgres, |s| s.worker_slots = 0).await;
        let file = upload_corpus(&app).await;
        let steps = 40;
        let id = create_job(&app, &pretrain_job(&file, steps, 5)).await;
        let mut w1 = start_worker(&app, 2);
        // Kill it once a checkpoint exists and it has trained past it.
        app.wait_past_a_checkpoint(&id, 120).await;
        w1.kill().unwrap(); // SIGKILL
        w1.wait().unwrap();
        assert_eq!(app.job(&id).await["status"], "running");
        let mut w2 = start_worker(&app, 2);
        let done = app.wait_status(&id, "succeeded", 180).await;
        w2.kill().unwrap();
        w2.wait().unwrap();
        assert_eq!(done["status"], "succeeded", "{done}");
        let resumed = app.train_points(&id).await;
        assert_each_step_once(&resumed, steps as u64);
        let messages = app.event_messages(&id).await;
        assert!(
            messages.iter().any(|m| m.starts_with("Job resumed")),
            "{messages:?}"
        );

        // The same spec run without interruption ends on the same loss.
        let straight = create_job(&app, &pretrain_job(&file, steps, 5)).await;
        let mut w3 = start_worker(&app, 2);
        let done = app.wait_status(&straight, "succeeded", 180).await;
        w3.kill().unwrap();
        w3.wait().unwrap();
        let events = app.event_messages(&straight).await;
        assert_eq!(done["status"], "succeeded", "{done}\n{events:?}");
        let reference = app.train_points(&straight).await;
        let (a, b) = (resumed.last().unwrap().1, reference.last().unwrap().1);
        assert!(
            (a - b).abs() <= 1e-6,
            "final loss after resume {a} vs uninterrupted {b}\nresumed {resumed:?}\nuninterrupted {reference:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sigterm_checkpoints_requeues_and_exits_cleanly() {
        let app = spawn_app_with(Backend::Postgres, |s| s.worker_slots = 0).await;
        let file = upload_corpus(&app).await;
        let steps = 400;
        let id = create_job(&app, &interruptible_job(&file, steps)).await;
        let mut w1 = start_worker(&app, 30);
        app.wait_for_first_step(&id).await;
        let term = Command::new("kill")
            .args(["-TERM", &w1.id().to_string()])
            .status()
            .unwrap();
        assert!(term.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        let exit = loop {
            if let Some(status) = w1.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not exit after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(exit.success(), "clean exit: {exit:?}");
        // Back in the queue, with a checkpoint to resume from, and no lease held.
        let j = app.job(&id).await;
        assert_eq!(j["status"], "queued", "{j}");
        let (_, ck) = app
            .get(
                &app.admin_key,
                &format!("/v1/fine_tuning/jobs/{id}/checkpoints"),
            )
            .await;
        assert_eq!(ck["data"].as_array().unwrap().len(), 1, "{ck}");
        let mut w2 = start_worker(&app, 30);
        let done = app.wait_status(&id, "succeeded", 180).await;
        w2.kill().unwrap();
        w2.wait().unwrap();
        assert_eq!(done["status"], "succeeded", "{done}");
        assert_each_step_once(&app.train_points(&id).await, steps as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_workers_run_twenty_jobs_exactly_once() {
        let app = spawn_app_with(Backend::Postgres, |s| s.worker_slots = 0).await;
        let file = upload_corpus(&app).await;
        let mut ids = vec![];
        for _ in 0..20 {
            ids.push(create_job(&app, &pretrain_job(&file, 2, 1000)).await);
        }
        let mut workers = [start_worker(&app, 10), start_worker(&app, 10)];
        for id in &ids {
            let j = app.wait_status(id, "succeeded", 300).await;
            assert_eq!(j["status"], "succeeded", "{j}");
        }
        for w in &mut workers {
            w.kill().unwrap();
            w.wait().unwrap();
        }
        let mut by_worker = std::collections::HashMap::<String, usize>::new();
        for id in &ids {
            let starts: Vec<String> = app
                .event_messages(id)
                .await
                .into_iter()
                .filter(|m| m.starts_with("Job started") || m.starts_with("Job resumed"))
                .collect();
            assert_eq!(starts.len(), 1, "job {id} ran once: {starts:?}");
            let worker = starts[0]
                .rsplit(' ')
                .next()
                .unwrap()
                .rsplit_once("-slot")
                .unwrap()
                .0
                .to_string();
            *by_worker.entry(worker).or_default() += 1;
            assert_each_step_once(&app.train_points(id).await, 2);
        }
        assert_eq!(by_worker.values().sum::<usize>(), 20);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_aborting_training_process_fails_its_job_and_the_server_keeps_serving() {
        // A real `wick serve` whose training processes abort at step 3, as out-of-memory would.
        let dir = tempfile::tempdir().unwrap();
        let (mut server, api) = common::serve_api(&dir.path().join("data"), |cmd| {
            cmd.args(["--worker-slots", "1", "--threads-per-job", "1"])
                .env(wick::worker::child::FAULT_ABORT_ENV, "3");
        })
        .await;
        let file = api
            .upload_file("pretrain", "d.jsonl", corpus::corpus_jsonl(100))
            .await;
        let (s, job) = api
            .post(
                &api.admin_key,
                "/v1/fine_tuning/jobs",
                &pretrain_job(&file, 20, 1000),
            )
            .await;
        assert_eq!(s, 200, "{job}");
        let id = job["id"].as_str().unwrap();
        let failed = api
            .wait_until(id, 60, "the job to fail", |j| j["status"] == "failed")
            .await;
        assert_eq!(failed["error"]["code"], "training_process_crashed");
        assert!(
            failed["error"]["message"]
                .as_str()
                .unwrap()
                .contains("signal 6"),
            "{failed}"
        );
        // The server is still there and answering.
        let (s, _) = api.get(&api.admin_key, "/v1/fine_tuning/jobs").await;
        assert_eq!(s, 200);
        assert!(
            server.try_wait().unwrap().is_none(),
            "the server process must survive"
        );
        server.kill().await.unwrap();
    }
}
