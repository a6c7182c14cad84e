-- Migration 5 is sched-data's (issue #18, item 1: schedules as data). This placeholder only
-- keeps the numbering without gaps on the nb-jobs branch; it creates nothing. When both
-- branches are merged, delete this file and keep sched-data's 0005.
SELECT 1;
