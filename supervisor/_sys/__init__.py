"""The supervisor's thin syscall layer.

What :mod:`os` lacks goes through :mod:`supervisor._sys.linux`, whose errors
name the call and its arguments. Constants live in
:mod:`supervisor._sys.constants`, each with the header it comes from. PID 1's
own system calls are C (``supervisor/_child``).
"""
