"""The task-events Lambda: ECS tasks' own records (awsvpc, Fargate, the fixed ``RR_NAME``).

Each "ECS Task State Change" event is handled level-triggered (:mod:`.handle`); a schedule
adds whatever a lost event left missing (:mod:`.reconcile`). :mod:`.settings` are the
Lambda's settings; what a task's records are is :mod:`ecssd_agent.core.task_records`.
"""
