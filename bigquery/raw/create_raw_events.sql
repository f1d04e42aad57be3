-- raw.book_media_events: every event the collector accepted, one row per received copy.
--
-- Grain: one row per delivery. A client that retries after a 503 repeats an event_id with a
-- later received_at; staging keeps the first copy. Columns are the published row
-- (collector/enrich.py, schemas/book_media_events.json) plus the four Pub/Sub metadata
-- columns that a BigQuery subscription with use_table_schema and write_metadata fills in.
-- Rows from `bq load` and `collector warehouse load` leave the metadata columns null.
--
-- Partitioned by the server's receive date, so a wrong client clock never picks the
-- partition. Clustered by event name, because most queries read a few kinds of events.

create table if not exists raw.book_media_events (
    -- ids
    event_id string not null,
    event_name string not null,

    -- timestamps
    occurred_at timestamp not null,
    sent_at timestamp,
    received_at timestamp not null,
    occurred_at_corrected timestamp not null,

    -- who
    user_id string,
    anonymous_id string,
    session_id string,

    -- what and where
    content struct<
        content_id string not null,
        content_type string not null,
        title string,
        author string,
        genre string,
        duration_seconds float64,
        page_count int64
    >,
    context struct<
        page_url string,
        referrer string,
        locale string,
        timezone string,
        platform string,
        app_version string,
        user_agent string
    >,
    properties json,

    -- request, as the collector saw it
    key_id string not null,
    client_ip string,
    user_agent string,
    is_bot bool not null,
    schema_version string not null,

    -- Pub/Sub metadata
    subscription_name string,
    message_id string,
    publish_time timestamp,
    attributes json
)
partition by date(received_at)
cluster by event_name
options (
    description = 'Accepted book media events as published by the collector; one row per delivery.'
);
