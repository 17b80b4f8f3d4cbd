"""What the workflow needs around the stages: each rule's resources (jobs, resources), its log
(rulelog), threads (threads), progress lines (progress), and what jobs used against what they asked (usage)."""
