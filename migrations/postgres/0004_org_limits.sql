-- Per-organization limits an operator sets (GET/PUT /v1/admin/organizations/{name}/limits):
-- requests per second per key, jobs active at once (validating, queued or running), bytes of
-- uploaded files. NULL means no limit; an organization without a row has none.
create table org_limits (
    org_id text primary key references organizations(id),
    requests_per_second double precision,
    max_running_jobs bigint,
    max_stored_bytes bigint,
    updated_at timestamptz not null
);
