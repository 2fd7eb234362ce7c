/* cmd_serve.c: placeholder until the subcommand lands. */
#include <stdio.h>
#include "commands.h"

int vs_cmd_serve(int argc, char **argv)
{
    (void)argc;
    fprintf(stderr, "vitserve %s: not built yet\n", argv[0]);
    return 1;
}
