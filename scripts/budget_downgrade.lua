-- budget_downgrade.lua: switch to a cheaper model when a budget is nearly spent.
--
-- on_prompt reads ctx:budget() (the spend of the caller's key, else its team, in the current
-- budget period) and, once more than 80% of the USD or token limit is spent, rewrites
-- `chat.model` to a cheaper model so the remaining budget lasts longer. Requests without a
-- budget, or for a model not in the table, are left alone. The cheaper model must be a
-- [[model]] of the config and allowed for the key.
--
-- Configure:
--   [ai]
--   hooks = "scripts/budget_downgrade.lua"
-- and give keys a budget:
--   credentialflow keys create --config credentialflow.toml --name team-bot --budget-usd 5

-- Expensive model -> cheaper model (names as clients use them, i.e. [[model]] names).
local CHEAPER = {
	["gpt-4o"] = "gpt-4o-mini",
	["claude-sonnet"] = "claude-haiku",
}

-- Fraction of the budget after which requests are downgraded.
local THRESHOLD = 0.8

local function spent_fraction(budget)
	local fraction = 0
	if budget.limit_usd and budget.limit_usd > 0 then
		fraction = math.max(fraction, budget.used_usd / budget.limit_usd)
	end
	if budget.limit_tokens and budget.limit_tokens > 0 then
		fraction = math.max(fraction, budget.used_tokens / budget.limit_tokens)
	end
	return fraction
end

function on_prompt(ctx, chat)
	local budget = ctx:budget()
	if not budget then
		return nil
	end
	local cheaper = CHEAPER[chat.model]
	if cheaper and spent_fraction(budget) > THRESHOLD then
		ctx.vars.downgraded_from = chat.model
		chat.model = cheaper
		return chat
	end
	return nil
end

function on_log(ctx, entry)
	if ctx.vars.downgraded_from then
		entry.downgraded_from = ctx.vars.downgraded_from
	end
end
