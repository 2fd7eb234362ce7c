/* vst_msg.c: see vst_msg.h.  Linked into every unit test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

#include "vst_msg.h"

void vst_msg_has_all(const char *msg, va_list ap)
{
    for (const char *sub; (sub = va_arg(ap, const char *));) {
        if (!strstr(msg, sub)) print_error("'%s' not in: %s\n", sub, msg);
        assert_non_null(strstr(msg, sub));
    }
}
