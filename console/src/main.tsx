/**
 * Entry point: styles, then the app into #app.
 */
import { render } from 'preact';
import { App } from './app';
import { applyCachedBranding } from './branding';
import './styles.css';

applyCachedBranding();
const root = document.getElementById('app');
if (root) render(<App />, root);
