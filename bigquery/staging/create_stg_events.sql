-- staging.stg_events: typed, deduplicated events.
--
-- Grain: one row per event_id, the first received copy (earliest received_at).
-- Key: event_id. The properties JSON is expanded into typed columns; user_key is
-- coalesce(user_id, anonymous_id); event_at is the clock-skew corrected event time.
--
-- Incremental: the runner passes @window_start (DATE, UTC). Rows received on or after it
-- are deleted and rebuilt from raw. An event whose first copy was received before the
-- window is already here, so later copies of it are skipped. A full refresh drops the
-- table and passes the earliest date, which rebuilds everything. Running the file twice
-- with the same @window_start leaves the same table.

create table if not exists staging.stg_events (
    -- ids
    event_id string not null,
    event_name string not null,
    user_key string,
    user_id string,
    anonymous_id string,
    session_id string,
    content_id string,
    order_id string,

    -- content
    content_type string,
    content_title string,
    content_author string,
    content_genre string,
    content_duration_seconds float64,
    content_page_count int64,

    -- context
    platform string,
    locale string,
    timezone string,
    app_version string,
    page_url string,
    referrer string,

    -- reading
    book_format string,
    resume_page int64,
    page_number int64,
    page_count int64,
    page_direction string,
    seconds_on_page float64,
    chapter_index int64,
    chapter_count int64,

    -- playback; duration_seconds is the media length, or the session length on session_end
    position_seconds float64,
    duration_seconds float64,
    playback_rate float64,
    video_quality string,

    -- purchase
    product_type string,
    amount numeric,
    currency string,
    plan string,

    -- booleans
    is_bot bool not null,

    -- timestamps
    event_at timestamp not null,
    event_date date not null,
    occurred_at timestamp not null,
    sent_at timestamp,
    received_at timestamp not null,
    received_date date not null,

    -- delivery
    key_id string not null,
    schema_version string not null,
    message_id string
)
partition by received_date
cluster by event_name, user_key
options (
    description = 'Typed book media events, one row per event_id (first received copy).'
);

delete from staging.stg_events
where received_date >= @window_start;

insert into staging.stg_events (
    event_id,
    event_name,
    user_key,
    user_id,
    anonymous_id,
    session_id,
    content_id,
    order_id,
    content_type,
    content_title,
    content_author,
    content_genre,
    content_duration_seconds,
    content_page_count,
    platform,
    locale,
    timezone,
    app_version,
    page_url,
    referrer,
    book_format,
    resume_page,
    page_number,
    page_count,
    page_direction,
    seconds_on_page,
    chapter_index,
    chapter_count,
    position_seconds,
    duration_seconds,
    playback_rate,
    video_quality,
    product_type,
    amount,
    currency,
    plan,
    is_bot,
    event_at,
    event_date,
    occurred_at,
    sent_at,
    received_at,
    received_date,
    key_id,
    schema_version,
    message_id
)
with

ranked_copies as (
    select
        *,
        row_number() over (
            partition by event_id
            order by received_at, publish_time, message_id, occurred_at_corrected, sent_at
        ) as copy_number
    from raw.book_media_events
    where received_at >= timestamp(@window_start, 'UTC')
),

new_events as (
    select *
    from ranked_copies
    where
        copy_number = 1
        and not exists (
            select 1
            from staging.stg_events as staged
            where staged.event_id = ranked_copies.event_id
        )
),

typed as (
    select
        -- ids
        event_id,
        event_name,
        coalesce(user_id, anonymous_id) as user_key,
        user_id,
        anonymous_id,
        session_id,
        content.content_id as content_id,
        json_value(properties, '$.order_id') as order_id,

        -- content
        content.content_type as content_type,
        content.title as content_title,
        content.author as content_author,
        content.genre as content_genre,
        content.duration_seconds as content_duration_seconds,
        content.page_count as content_page_count,

        -- context
        context.platform as platform,
        context.locale as locale,
        context.timezone as timezone,
        context.app_version as app_version,
        context.page_url as page_url,
        context.referrer as referrer,

        -- reading
        json_value(properties, '$.format') as book_format,
        safe_cast(json_value(properties, '$.resume_page') as int64) as resume_page,
        safe_cast(json_value(properties, '$.page_number') as int64) as page_number,
        safe_cast(json_value(properties, '$.page_count') as int64) as page_count,
        json_value(properties, '$.direction') as page_direction,
        safe_cast(json_value(properties, '$.seconds_on_page') as float64) as seconds_on_page,
        safe_cast(json_value(properties, '$.chapter_index') as int64) as chapter_index,
        safe_cast(json_value(properties, '$.chapter_count') as int64) as chapter_count,

        -- playback
        safe_cast(json_value(properties, '$.position_seconds') as float64) as position_seconds,
        safe_cast(json_value(properties, '$.duration_seconds') as float64) as duration_seconds,
        safe_cast(json_value(properties, '$.playback_rate') as float64) as playback_rate,
        json_value(properties, '$.quality') as video_quality,

        -- purchase; the amount is a decimal string, cast straight to NUMERIC (no float)
        json_value(properties, '$.product_type') as product_type,
        safe_cast(json_value(properties, '$.amount') as numeric) as amount,
        json_value(properties, '$.currency') as currency,
        json_value(properties, '$.plan') as plan,

        -- booleans
        is_bot,

        -- timestamps
        occurred_at_corrected as event_at,
        date(occurred_at_corrected, 'UTC') as event_date,
        occurred_at,
        sent_at,
        received_at,
        date(received_at, 'UTC') as received_date,

        -- delivery
        key_id,
        schema_version,
        message_id
    from new_events
)

select * from typed;
