-- marts.content_completion: how many of the users who started a title finished it.
--
-- Grain: one row per content_id and content_type; key (content_id, content_type).
-- starters: distinct users with book_opened, audio_played or video_played for the title.
-- completers: those starters who also completed it, meaning a chapter_completed with
-- chapter_index = chapter_count (books and audiobooks) or a video_paused at 95 % or more
-- of duration_seconds. A completion without a start event in the data is not counted, so
-- completion_rate = completers / starters is never above 1. Bot events are excluded.

create or replace table marts.content_completion
options (description = 'Starters, completers and completion rate per title.')
as

with

events as (
    select *
    from staging.stg_events
    where not is_bot and content_id is not null
),

starts as (
    select distinct
        content_id,
        content_type,
        user_key
    from events
    where event_name in ('book_opened', 'audio_played', 'video_played')
),

completions as (
    select distinct
        content_id,
        content_type,
        user_key
    from events
    where
        (event_name = 'chapter_completed' and chapter_index = chapter_count)
        -- Compared as position * 100 >= duration * 95 so that no decimal literal is
        -- involved: 0.95 is FLOAT64 in BigQuery but DECIMAL in DuckDB.
        or (event_name = 'video_paused' and position_seconds * 100 >= duration_seconds * 95)
),

per_content as (
    select
        starts.content_id,
        starts.content_type,
        count(distinct starts.user_key) as starters,
        count(distinct completions.user_key) as completers
    from starts
    left join completions
        on
            starts.content_id = completions.content_id
            and starts.content_type = completions.content_type
            and starts.user_key = completions.user_key
    group by starts.content_id, starts.content_type
),

content_completion as (
    select
        content_id,
        content_type,
        starters,
        completers,
        cast(completers as float64) / cast(starters as float64) as completion_rate
    from per_content
)

select * from content_completion;
