"""The actor runtime: mailboxes, actors and the supervisor that restarts them."""

from notifi.runtime.actor import Actor
from notifi.runtime.mailbox import Letter, Mailbox, MailboxFull, Stopped
from notifi.runtime.supervisor import ChildSpec, Outcome, Restart, Supervisor

__all__ = [
    "Actor",
    "ChildSpec",
    "Letter",
    "Mailbox",
    "MailboxFull",
    "Outcome",
    "Restart",
    "Stopped",
    "Supervisor",
]
