/* commands.h: the subcommands main.c dispatches to.  Each takes argv with
 * argv[0] = the subcommand name and returns the process exit status:
 * 0 success, 1 a failure reported on stderr, 2 a usage error. */
#ifndef VS_CLI_COMMANDS_H
#define VS_CLI_COMMANDS_H

int vs_cmd_classify(int argc, char **argv);
int vs_cmd_inspect(int argc, char **argv);
int vs_cmd_preprocess(int argc, char **argv);
int vs_cmd_info(int argc, char **argv);
int vs_cmd_bench(int argc, char **argv);
int vs_cmd_serve(int argc, char **argv);

#endif
