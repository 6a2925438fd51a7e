-- Funnel monotonicity: sessions >= viewed >= carted >= purchased on every day.
select *
from {{ ref('mart_conversion_funnel') }}
where not (
    sessions >= viewed_sessions
    and viewed_sessions >= carted_sessions
    and carted_sessions >= purchased_sessions
    and purchased_sessions >= 0
)
