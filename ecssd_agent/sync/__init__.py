"""Read, plan, apply against Route 53: the loop the agent (direct mode) and the task-events
Lambda share, and the reads on a budget the agent and the zone writer share.

Above the core (it plans with :mod:`ecssd_agent.core.plan`) and the Route 53 adapter (it reads
and writes with :mod:`ecssd_agent.aws.route53`); below every entry point.
"""
