-- Worker slots, each on one device (`--devices`): what `GET /v1/workers` lists. A slot writes its
-- row when it starts, renews `last_seen_at` every few seconds (with the job it runs), and deletes
-- it when it stops; a row not renewed for a while is a worker that died.
create table workers (
    id text primary key,
    host text not null,
    device text not null,
    device_kind text not null,
    device_name text not null,
    device_memory_bytes bigint,
    job_id text,
    started_at text not null,
    last_seen_at text not null
);
