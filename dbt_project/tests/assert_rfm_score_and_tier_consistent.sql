-- RFM consistency: scores 1-5, rfm_score is their sum, and the tier is the reference's
-- band of that sum (Champion 13-15, Loyal 10-12, Potential 7-9, At Risk 5-6, Lost 3-4).
select *
from {{ ref('mart_user_behavior') }}
where r_score not between 1 and 5
    or f_score not between 1 and 5
    or m_score not between 1 and 5
    or rfm_score <> r_score + f_score + m_score
    or rfm_tier <> case
        when rfm_score between 13 and 15 then 'Champion'
        when rfm_score between 10 and 12 then 'Loyal'
        when rfm_score between 7 and 9 then 'Potential'
        when rfm_score between 5 and 6 then 'At Risk'
        when rfm_score between 3 and 4 then 'Lost'
    end
