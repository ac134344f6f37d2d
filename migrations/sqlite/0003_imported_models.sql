-- Base models imported into the blob store (`wick models import`), for workers that share no
-- folder with the machine the model came from: the files live under base-models/<content hash>/,
-- and each worker caches them by that hash. config.json is kept here so the API can estimate and
-- check jobs without fetching the weights.
create table imported_models (
    id text primary key,
    content_hash text not null,
    blob_path text not null,
    config text not null,
    parameters bigint not null,
    chat_template boolean not null,
    bytes bigint not null,
    created_at text not null
);
