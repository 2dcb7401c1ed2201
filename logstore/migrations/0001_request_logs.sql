-- One row per call through the proxy (hit, miss, stream, error, rejected).
-- Written only by logstore.writer: COPY into a temp staging table, then
-- INSERT ... ON CONFLICT (request_id) DO NOTHING, so replays never duplicate.
CREATE TABLE request_logs (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    request_id              text             NOT NULL,
    created_at              timestamptz      NOT NULL,
    token_id                text,
    token_name              text,
    upstream_id             text,
    method                  text             NOT NULL,
    path                    text             NOT NULL,
    status_code             integer          NOT NULL,
    success                 boolean          NOT NULL,
    error                   text,
    duration_ms             double precision,
    ttfb_ms                 double precision,
    streamed                boolean          NOT NULL DEFAULT false,
    model_requested         text,
    model                   text,            -- the model that served the call (requested one when unknown)
    model_permaslug         text,
    provider                text,
    endpoint_id             text,
    generation_id           text,
    prompt_tokens           integer          NOT NULL DEFAULT 0,
    completion_tokens       integer          NOT NULL DEFAULT 0,
    total_tokens            integer          NOT NULL DEFAULT 0,
    cached_tokens           integer          NOT NULL DEFAULT 0,
    cache_creation_tokens   integer          NOT NULL DEFAULT 0,
    cache_read_tokens       integer          NOT NULL DEFAULT 0,
    reasoning_tokens        integer          NOT NULL DEFAULT 0,
    cost                    double precision,  -- USD; NULL when neither the upstream nor pricing could tell
    byok_cost               double precision,
    cache_discount          double precision,  -- from the generation record (enrich_generations)
    cache_status            text             NOT NULL,  -- miss | exact | semantic | bypass | off
    similarity              double precision,
    saved_cost              double precision,  -- cache hits: what the original call cost
    saved_prompt_tokens     integer          NOT NULL DEFAULT 0,
    saved_completion_tokens integer          NOT NULL DEFAULT 0,
    system_prompt_hash      text,
    user_prompt_hash        text,
    response_preview        text,
    request_body            jsonb,            -- only with log_store_bodies
    response_body           text,             -- only with log_store_bodies
    project_id              text,
    task_id                 text,
    agent_type              text,
    agent_id                text,
    run_id                  text,
    query_id                text,
    iteration               integer,
    metadata                jsonb,
    routing                 jsonb,            -- fallback attempts, when any
    CONSTRAINT request_logs_request_id_key UNIQUE (request_id)
);

-- Newest-first pagination: ORDER BY created_at DESC, id DESC walks these backwards; selective filters have
-- their own (filter, created_at, id) index so a filtered page is an index range scan, and the id list of a
-- deep page can come from an index-only scan before the rows are fetched. Every index slows ingest, so the
-- low-cardinality filters have none of their own: a common value (status 200, cache miss) finds its rows
-- quickly on the created_at index, and the rare ones (errors, cache hits) have the partial indexes below,
-- which the queries make usable by adding the implied predicate (status_code >= 400 => NOT success).
CREATE INDEX request_logs_created_idx ON request_logs (created_at, id);
CREATE INDEX request_logs_token_idx ON request_logs (token_id, created_at, id);
CREATE INDEX request_logs_model_idx ON request_logs (model, created_at, id);
CREATE INDEX request_logs_provider_idx ON request_logs (provider, created_at, id);
-- Rare or optional values: partial indexes cost nothing for rows that do not carry them.
CREATE INDEX request_logs_upstream_idx ON request_logs (upstream_id, created_at, id) WHERE upstream_id IS NOT NULL;
CREATE INDEX request_logs_errors_idx ON request_logs (created_at, id) WHERE NOT success;
CREATE INDEX request_logs_hits_idx ON request_logs (created_at, id) WHERE cache_status IN ('exact', 'semantic');
CREATE INDEX request_logs_project_idx ON request_logs (project_id, created_at, id) WHERE project_id IS NOT NULL;
CREATE INDEX request_logs_agent_type_idx ON request_logs (agent_type, created_at, id) WHERE agent_type IS NOT NULL;
CREATE INDEX request_logs_run_idx ON request_logs (run_id, iteration) WHERE run_id IS NOT NULL;
CREATE INDEX request_logs_query_idx ON request_logs (query_id, iteration) WHERE query_id IS NOT NULL;
CREATE INDEX request_logs_savings_idx ON request_logs (saved_cost DESC) WHERE saved_cost > 0;

-- Daily rollup, upserted by the writer in the same transaction as the insert, counting only rows that were
-- actually inserted. Dimensions are '' rather than NULL so they can be part of the primary key.
CREATE TABLE usage_daily (
    day                     date             NOT NULL,
    token_id                text             NOT NULL DEFAULT '',
    upstream_id             text             NOT NULL DEFAULT '',
    model                   text             NOT NULL DEFAULT '',
    model_permaslug         text             NOT NULL DEFAULT '',
    provider                text             NOT NULL DEFAULT '',
    endpoint_id             text             NOT NULL DEFAULT '',
    cache_status            text             NOT NULL,
    status_code             integer          NOT NULL,
    requests                bigint           NOT NULL DEFAULT 0,
    errors                  bigint           NOT NULL DEFAULT 0,
    streamed                bigint           NOT NULL DEFAULT 0,
    prompt_tokens           bigint           NOT NULL DEFAULT 0,
    completion_tokens       bigint           NOT NULL DEFAULT 0,
    total_tokens            bigint           NOT NULL DEFAULT 0,
    cached_tokens           bigint           NOT NULL DEFAULT 0,
    cache_creation_tokens   bigint           NOT NULL DEFAULT 0,
    cache_read_tokens       bigint           NOT NULL DEFAULT 0,
    reasoning_tokens        bigint           NOT NULL DEFAULT 0,
    cost                    double precision NOT NULL DEFAULT 0,
    byok_cost               double precision NOT NULL DEFAULT 0,
    saved_cost              double precision NOT NULL DEFAULT 0,
    saved_prompt_tokens     bigint           NOT NULL DEFAULT 0,
    saved_completion_tokens bigint           NOT NULL DEFAULT 0,
    duration_ms             double precision NOT NULL DEFAULT 0,  -- sum; divide by requests for the mean
    similarity              double precision NOT NULL DEFAULT 0,  -- sum over semantic hits
    PRIMARY KEY (day, token_id, upstream_id, model, model_permaslug, provider, endpoint_id, cache_status,
                 status_code)
);
CREATE INDEX usage_daily_token_idx ON usage_daily (token_id, day);
