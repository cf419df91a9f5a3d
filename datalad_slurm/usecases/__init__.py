"""What the commands do: schedule, finish, reschedule.

``commands/`` only adds DataLad's interface on top.
"""
