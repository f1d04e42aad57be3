-- marts.revenue_daily: orders and revenue per day, currency and product type.
--
-- Grain: one row per revenue_date, currency and product_type. Each order_id counts once:
-- the purchase event with the earliest corrected time is kept, so a checkout page that
-- sends the same order twice does not double the revenue. revenue_date is the UTC date of
-- that event's corrected time. Amounts stay NUMERIC from the event to the sum; currencies
-- are never converted or added together. Bot events are excluded, since synthetic
-- monitors that walk through a checkout carry bot user agents.

create or replace table marts.revenue_daily
options (description = 'Orders and revenue per day, currency and product type.')
as

with

purchases as (
    select
        order_id,
        event_date,
        currency,
        product_type,
        amount,
        row_number() over (
            partition by order_id
            order by event_at, received_at, event_id
        ) as order_copy_number
    from staging.stg_events
    where event_name = 'purchase' and not is_bot and order_id is not null
),

orders as (
    select *
    from purchases
    where order_copy_number = 1
),

revenue_daily as (
    select
        event_date as revenue_date,
        currency,
        product_type,
        count(*) as orders,
        sum(amount) as revenue
    from orders
    group by event_date, currency, product_type
)

select * from revenue_daily;
