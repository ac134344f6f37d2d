-- Foundation schema: organizations, keys, files, jobs and everything a job produces.
-- Ids are prefixed strings (`file-…`, `ftjob-…`) built on UUIDv7, so they sort by creation.

create table organizations (
    id text primary key,
    name text not null unique,
    created_at timestamptz not null
);

create table api_keys (
    id text primary key,
    org_id text not null references organizations(id),
    name text not null,
    key_hash text not null unique,
    key_prefix text not null,
    created_at timestamptz not null,
    last_used_at timestamptz,
    revoked_at timestamptz
);

create table files (
    id text primary key,
    org_id text not null references organizations(id),
    filename text not null,
    purpose text not null,
    bytes bigint not null,
    sha256 text not null,
    blob_path text not null,
    status text not null,
    status_details text,
    report jsonb,
    created_at timestamptz not null
);
create index files_org on files (org_id, id);

create table jobs (
    id text primary key,
    org_id text not null references organizations(id),
    model text not null,
    training_file text not null references files(id),
    validation_file text references files(id),
    suffix text,
    seed bigint not null,
    method_type text not null,
    spec jsonb not null,
    status text not null,
    error jsonb,
    fine_tuned_model text,
    trained_tokens bigint,
    estimated_finish timestamptz,
    result_files jsonb not null,
    metadata jsonb,
    priority integer not null default 0,
    attempts integer not null default 0,
    max_attempts integer not null default 3,
    lease_owner text,
    lease_expires_at timestamptz,
    heartbeat_at timestamptz,
    created_at timestamptz not null,
    started_at timestamptz,
    finished_at timestamptz
);
create index jobs_org on jobs (org_id, id);
create index jobs_queue on jobs (status, priority, id);

create table job_events (
    seq bigserial primary key,
    id text not null unique,
    job_id text not null references jobs(id) on delete cascade,
    level text not null,
    kind text not null,
    message text not null,
    data jsonb,
    created_at timestamptz not null
);
create index job_events_job on job_events (job_id, seq);

create table job_metrics (
    seq bigserial primary key,
    job_id text not null references jobs(id) on delete cascade,
    step bigint not null,
    kind text not null,
    data jsonb not null,
    created_at timestamptz not null,
    unique (job_id, step, kind)
);

create table checkpoints (
    id text primary key,
    job_id text not null references jobs(id) on delete cascade,
    step bigint not null,
    blob_path text not null,
    metrics jsonb,
    created_at timestamptz not null,
    unique (job_id, step)
);

create table models (
    id text primary key,
    org_id text references organizations(id),
    kind text not null,
    base_model text,
    job_id text references jobs(id),
    blob_path text,
    created_at timestamptz not null
);
