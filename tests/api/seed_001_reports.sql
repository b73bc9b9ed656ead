SELECT
wj.job_code,
wd.workflow_name,
wj.status,
wj.current_step,
(SELECT COUNT(*) FROM workflow_steps WHERE workflow_id = wd.id) as total_steps,
wj.progress_percent,
wj.priority,
wj.submitted_by,
wj.submitted_at,
wj.started_at,
wj.completed_at
FROM workflow_jobs wj
INNER JOIN workflow_definitions wd ON wj.workflow_id = wd.id
ORDER BY
CASE wj.status
WHEN 'failed' THEN 1
WHEN 'processing' THEN 2
WHEN 'queued' THEN 3
WHEN 'pending' THEN 4
WHEN 'completed' THEN 5
END,
wj.priority DESC;
-- next report
SELECT
mq.queue_name,
COUNT(*) as jobs_in_queue,
COUNT(CASE WHEN mq.status = 'queued' THEN 1 END) as waiting,
COUNT(CASE WHEN mq.status = 'processing' THEN 1 END) as processing,
AVG(wj.priority) as avg_priority,
MIN(mq.scheduled_time) as next_scheduled
FROM media_queue mq
INNER JOIN workflow_jobs wj ON mq.job_id = wj.id
WHERE mq.status IN ('queued', 'processing')
GROUP BY mq.queue_name
ORDER BY waiting DESC;
-- next report
SELECT
ws.step_name,
ws.step_type,
COUNT(se.id) as executions,
AVG(se.duration_seconds) as avg_duration_sec,
MIN(se.duration_seconds) as min_duration_sec,
MAX(se.duration_seconds) as max_duration_sec,
COUNT(CASE WHEN se.status = 'failed' THEN 1 END) as failures
FROM workflow_steps ws
LEFT JOIN step_executions se ON ws.id = se.step_id
GROUP BY ws.id, ws.step_name, ws.step_type
ORDER BY avg_duration_sec DESC;
-- next report
SELECT
wd.workflow_name,
wd.workflow_type,
COUNT(wj.id) as total_jobs,
COUNT(CASE WHEN wj.status = 'completed' THEN 1 END) as completed,
COUNT(CASE WHEN wj.status = 'failed' THEN 1 END) as failed,
COUNT(CASE WHEN wj.status IN ('pending', 'queued', 'processing') THEN 1 END) as in_progress,
AVG(CASE WHEN wj.completed_at IS NOT NULL
THEN EXTRACT(EPOCH FROM (wj.completed_at - wj.started_at)) / 60
END) as avg_duration_minutes
FROM workflow_definitions wd
LEFT JOIN workflow_jobs wj ON wd.id = wj.workflow_id
WHERE wd.is_active = TRUE
GROUP BY wd.id, wd.workflow_name, wd.workflow_type
ORDER BY total_jobs DESC;
