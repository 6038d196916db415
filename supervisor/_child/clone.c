/* clone3 with a fresh stack: the child starts in fn(arg), never in the
 * caller's frame.
 *
 * With CLONE_VM the child shares its parent's memory, so it cannot return
 * from the system call into the C function that made it (that frame belongs
 * to the parent, which goes on using it): the kernel starts the child on the
 * stack given in clone_args, and these few instructions call fn(arg) there
 * before any C code runs. glibc has the same trampoline for clone(2) but not
 * for clone3, which CLONE_INTO_CGROUP needs. */
#include "sv.h"

#if defined(__x86_64__)
__asm__(".text\n"
        ".globl sv_clone3\n"
        ".type sv_clone3,@function\n"
        "sv_clone3:\n"
        "    mov %rdx, %r8\n"  /* fn and arg in registers that the syscall keeps */
        "    mov %rcx, %r9\n"
        "    mov $435, %eax\n" /* SYS_clone3; args and size are in rdi, rsi already */
        "    syscall\n"
        "    test %rax, %rax\n"
        "    jnz 1f\n"
        "    xor %ebp, %ebp\n" /* the child: the outermost frame of its new stack */
        "    mov %r9, %rdi\n"
        "    call *%r8\n"
        "    mov %eax, %edi\n"
        "    mov $60, %eax\n" /* SYS_exit, should fn ever return */
        "    syscall\n"
        "    hlt\n"
        "1:  ret\n"
        ".size sv_clone3, .-sv_clone3\n");
#elif defined(__aarch64__)
__asm__(".text\n"
        ".globl sv_clone3\n"
        ".type sv_clone3,%function\n"
        "sv_clone3:\n"
        "    mov x9, x2\n"
        "    mov x10, x3\n"
        "    mov x8, #435\n"
        "    svc #0\n"
        "    cbnz x0, 1f\n"
        "    mov x29, xzr\n"
        "    mov x0, x10\n"
        "    blr x9\n"
        "    mov x8, #93\n"
        "    svc #0\n"
        "1:  ret\n"
        ".size sv_clone3, .-sv_clone3\n");
#else
#error "sv_clone3 is written for x86_64 and aarch64"
#endif
