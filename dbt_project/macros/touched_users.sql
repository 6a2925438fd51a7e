{#- The users a run past `cursor` may change in int_user_activity: every user with an event in
    a session that batches after `cursor` touched. That covers the sessions' owners before and
    after (a late event can hand a session to another user, and the user it left must lose
    it); a user of this set may have no session left. -#}
{% macro touched_user_ids(events, cursor) -%}
    select distinct all_events.user_id
    from {{ events }} as all_events
    where all_events.session_id in (
        select distinct new_events.session_id
        from {{ events }} as new_events
        where new_events.batch_id > {{ cursor }}
    )
{%- endmacro %}
