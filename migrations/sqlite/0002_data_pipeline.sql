-- The data pipeline and the job page (SQLite twin of migrations/postgres): cleaned files remember their source and options
-- (and hold a lease while a server cleans them, so an interrupted clean is picked up again),
-- token counts per file and model are kept once computed, a job may train on several files (each
-- named and weighted), and a job keeps its resolved hyperparameters and a summary of its metrics.

alter table files add column source_file text;
alter table files add column clean_options text;
alter table files add column clean_report text;
alter table jobs add column resolved text;
alter table jobs add column summary text;
alter table files add column clean_lease_until text;

create table file_token_stats (
    file_id text not null references files(id) on delete cascade,
    model text not null,
    stats text not null,
    created_at text not null,
    primary key (file_id, model)
);

create table job_files (
    job_id text not null references jobs(id) on delete cascade,
    file_id text not null references files(id),
    role text not null,
    name text not null,
    weight double precision,
    created_at text not null,
    primary key (job_id, role, name)
);
create index job_files_file on job_files (file_id);
