/*
 * print_options.c - `make options`: print the EPOLLFORK_* table from the code.
 *
 * The man page and the README list every variable with its default; this
 * prints the one table options.c parses from (name, default, help, separated
 * by tabs), so a test can check the documents against the code.
 */
#include <unistd.h>

#include "ef.h"

int main(void)
{
    ef_options_print_table(STDOUT_FILENO);
    return 0;
}
