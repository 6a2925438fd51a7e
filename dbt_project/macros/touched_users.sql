{#- The users whose row in int_user_activity a run past `cursor` rewrites: every user with an
    event in a session that batches after `cursor` touched, not only the session's user now
    (a late event can hand a session to another user, and the user it left must lose it).
    A user of this set may have no session left. -#}
{% macro touched_user_ids(events, cursor) -%}
    select distinct all_events.user_id
    from {{ events }} as all_events
    where all_events.session_id in (
        select distinct new_events.session_id
        from {{ events }} as new_events
        where new_events.batch_id > {{ cursor }}
    )
{%- endmacro %}
