/**
 * ARIA tabs: a tablist of buttons with roving tabindex.
 *
 * Arrow keys, Home and End move between tabs (and select them, the usual
 * "automatic activation"); the selected tab has aria-selected="true" and
 * controls its tabpanel, rendered by the caller with :func:`tabPanelProps`.
 */
import type { ComponentChildren } from 'preact';
import { useRef } from 'preact/hooks';

export interface TabItem {
  id: string;
  label: ComponentChildren;
}

interface Props {
  /** The tablist's accessible name. */
  label: string;
  /** A prefix for the element ids (unique on the page). */
  idPrefix: string;
  tabs: TabItem[];
  selected: string;
  onSelect: (id: string) => void;
}

export function tabId(prefix: string, id: string): string {
  return `${prefix}-tab-${id}`;
}

/**
 * Props of the tabpanel for tab ``id``. ``label``: a name of its own instead of
 * the tab's (the sign-in form's tab "API key" would otherwise also name the
 * panel, and "the field labelled API key" would be ambiguous).
 */
export function tabPanelProps(prefix: string, id: string, label?: string) {
  const name = label ? { 'aria-label': label } : { 'aria-labelledby': tabId(prefix, id) };
  return { role: 'tabpanel', id: `${prefix}-panel-${id}`, ...name } as const;
}

export function Tabs({ label, idPrefix, tabs, selected, onSelect }: Props) {
  const listRef = useRef<HTMLDivElement>(null);
  const onKeyDown = (event: KeyboardEvent) => {
    // Move from the focused tab (it may differ from the selected one).
    const focused = tabs.findIndex((t) => document.activeElement?.id === tabId(idPrefix, t.id));
    const index = focused >= 0 ? focused : tabs.findIndex((t) => t.id === selected);
    let next = -1;
    if (event.key === 'ArrowRight' || event.key === 'ArrowDown') next = (index + 1) % tabs.length;
    else if (event.key === 'ArrowLeft' || event.key === 'ArrowUp') next = (index - 1 + tabs.length) % tabs.length;
    else if (event.key === 'Home') next = 0;
    else if (event.key === 'End') next = tabs.length - 1;
    if (next < 0) return;
    event.preventDefault();
    onSelect(tabs[next].id);
    listRef.current?.querySelector<HTMLElement>(`#${CSS.escape(tabId(idPrefix, tabs[next].id))}`)?.focus();
  };
  return (
    <div class="tabs" role="tablist" aria-label={label} ref={listRef} onKeyDown={onKeyDown}>
      {tabs.map((tab) => {
        const active = tab.id === selected;
        return (
          <button
            type="button"
            role="tab"
            key={tab.id}
            id={tabId(idPrefix, tab.id)}
            class={`tab${active ? ' tab-active' : ''}`}
            aria-selected={active ? 'true' : 'false'}
            aria-controls={`${idPrefix}-panel-${tab.id}`}
            tabIndex={active ? 0 : -1}
            onClick={() => onSelect(tab.id)}
          >
            {tab.label}
          </button>
        );
      })}
    </div>
  );
}
