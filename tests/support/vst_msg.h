/* vst_msg.h: assertions on error messages shared by the unit tests. */
#ifndef VST_MSG_H
#define VST_MSG_H

#include <stdarg.h>

/* Fails the running cmocka test unless msg contains every string of the
 * NULL-terminated list ap, printing the missing one and msg. */
void vst_msg_has_all(const char *msg, va_list ap);

#endif
