/* `kvslim plan`: the KV-memory and cost planner command (tools/cmd_plan.c).
 * argv[0] is "plan" (or any program name); returns the process exit status. */
#ifndef KVS_TOOLS_CMD_PLAN_H
#define KVS_TOOLS_CMD_PLAN_H

int kvs_cmd_plan(int argc, char **argv);

#endif
