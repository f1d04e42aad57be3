-- marts.daily_active_users: distinct users with any event on a day, by platform.
--
-- Grain: one row per activity_date and platform, plus one row per date with
-- platform = 'all'. The 'all' row counts each user once, so it can be less than the sum
-- of the platform rows when someone used two platforms that day.
-- activity_date is the UTC date of the skew-corrected event time. A user is
-- coalesce(user_id, anonymous_id). Events without a platform count under 'unknown'
-- (server-sent purchases usually have no context). Bot events are excluded.

create or replace table marts.daily_active_users
options (description = 'Daily active users by platform, plus platform = all.')
as

with

events as (
    select
        event_date as activity_date,
        coalesce(platform, 'unknown') as platform,
        user_key
    from staging.stg_events
    where not is_bot
),

by_platform as (
    select
        activity_date,
        platform,
        count(distinct user_key) as active_users
    from events
    group by activity_date, platform
),

all_platforms as (
    select
        activity_date,
        'all' as platform,
        count(distinct user_key) as active_users
    from events
    group by activity_date
),

daily_active_users as (
    select * from by_platform
    union all
    select * from all_platforms
)

select * from daily_active_users;
